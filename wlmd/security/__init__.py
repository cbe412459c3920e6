"""Who may connect and how: hosts.allow/deny access rules and TLS."""
