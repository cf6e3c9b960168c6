"""Notifications: job completed/failed/cancelled and spend-limit warn/block, sent to Slack or
Discord incoming webhooks, e-mail (SMTP) and a generic webhook signed with Standard Webhooks.

``events`` queues rows in the caller's transaction (no network there); ``sender`` delivers
them from the scheduler with bounded retries; ``channels`` are the network adapters (no Flask,
no database); ``config`` holds the settings (secrets in the secret store, never returned)."""
