"""Retry options per activity: how often a step is retried by the Durable runtime, and how patiently.

The SDK clients already retry 429/5xx (honouring Retry-After) inside one attempt, so these cover what
outlasts that: a target host that is down for minutes (ARM key APIs need a healthy host), a crash.
"""

from __future__ import annotations

import azure.durable_functions as df

# Key operations on the target and Key Vault: a host restart takes a minute or two.
KEY_STEP = df.RetryOptions(first_retry_interval_in_milliseconds=15_000, max_number_of_attempts=5)
# Reads and queries: cheap, and a failure is reported, not fatal.
QUERY_STEP = df.RetryOptions(first_retry_interval_in_milliseconds=10_000, max_number_of_attempts=3)
# Publishing: consumers depend on it; event ids make retries idempotent.
PUBLISH_STEP = df.RetryOptions(first_retry_interval_in_milliseconds=10_000, max_number_of_attempts=5)
# The probe already retries inside the activity; one more attempt covers a crash.
VERIFY_STEP = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=2)
