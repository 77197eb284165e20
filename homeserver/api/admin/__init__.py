"""Admin API: endpoints under ``/_synapse/admin`` that Synapse's tools speak."""
