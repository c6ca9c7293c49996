"""Users, roles, passwords, API tokens and the audit log."""
