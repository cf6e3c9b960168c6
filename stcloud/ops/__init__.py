"""Operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus)."""
