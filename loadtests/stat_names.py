"""Names under which the locustfile records its statistics, and the report reads them.

Locust keys every statistic by (request type, name). End-to-end requests are recorded
as ``POST`` rows; the client-side streaming timings as custom request types. One name
for all chat requests keeps the end-to-end percentiles exact (Locust cannot merge
percentiles of two rows).
"""

from __future__ import annotations

CHAT_PATH = "/v1/chat/completions"
CHAT_NAME = CHAT_PATH
E2E_TYPE = "POST"
TTFT_TYPE = "TTFT"
TPOT_TYPE = "TPOT"
# Written by the locustfile on quit from the final statistics (see locustfile.py).
SUMMARY_SUFFIX = "_summary.csv"
FAILURES_SUFFIX = "_summary_failures.csv"
# One row per request (time, tenant, outcome, HTTP status, latency, TTFT): the
# reliability report's per-tenant latency over time and refusals.
REQUESTS_SUFFIX = "_requests.csv"
REQUEST_COLUMNS = ("t_s", "tenant", "stream", "outcome", "status", "latency_ms", "ttft_ms")
