"""Modal app for CLaaS (see claas_modal.app)."""
