"""Accounts: users, roles, sessions; external sign-in (LDAP, OIDC)."""
