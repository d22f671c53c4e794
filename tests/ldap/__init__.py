"""AD-like LDAP fixtures (schema, data) for forestgate tests; see README.md."""
