"""The engine contract: entry-point loading, a small torch engine the tests build, a service that serves it."""
