"""The benchmark scenarios; each measures one kind of instance on fresh stand-ins."""
