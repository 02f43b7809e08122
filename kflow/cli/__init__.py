"""Command-line interface (`kflow ...`)."""
