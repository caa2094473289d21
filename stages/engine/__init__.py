"""Flow engines other than prompt flow."""
