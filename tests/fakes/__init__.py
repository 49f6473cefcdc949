"""In-process fakes of hosted services, built from their real SDK types."""
