"""Accounts: users and roles, sessions, API keys, the ownership scope and the audit log.

Kept import-light (no Flask here) so that ``stcloud.accounts.scope`` can be used by services.
"""
