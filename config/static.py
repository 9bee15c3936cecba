"""WhiteNoise without its thread hop: its middleware is sync-only, which would make Django run
every request (the proxy's too) through a thread and back. This one is async: it serves files
under STATIC_URL and passes everything else straight through."""

from asgiref.sync import markcoroutinefunction
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = False
    async_capable = True

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request):
        path = request.path_info
        if path.startswith(self.static_prefix):
            static_file = self.find_file(path) if self.autorefresh else self.files.get(path)
            if static_file is not None:
                return self.serve(static_file, request)
        return await self.get_response(request)
