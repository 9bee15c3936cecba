# The gateway image: one image for the web server, the Celery worker and beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --create-home gateway && mkdir -p var && chown -R gateway var
USER gateway

EXPOSE 8000
# ASGI under gunicorn with uvicorn workers; TLS is usually terminated by the load balancer.
CMD ["sh", "-c", "python manage.py migrate --noinput && python manage.py collectstatic --noinput -v0 && exec gunicorn config.asgi:application -c config/gunicorn.py -k config.workers.GatewayWorker --no-control-socket -b 0.0.0.0:${PORT:-8000} --graceful-timeout 40"]
