"""The /api lists' pagination: DRF's limit/offset, bounded so that no `limit` or `offset` a
client sends can overflow the database's integers (a 500 on PostgreSQL)."""

from __future__ import annotations

from rest_framework.pagination import LimitOffsetPagination

# Far beyond any list here, far below a signed 64-bit integer.
MAX_OFFSET = 2**53


class ApiPagination(LimitOffsetPagination):
    max_limit = 1000

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), MAX_OFFSET)
