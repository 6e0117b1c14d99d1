"""Who may do what: projects and keys, identity verification, origins."""
