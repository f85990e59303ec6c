"""Developer tools run from the repository root (`make demo`). Never deployed, never imported by the app."""
