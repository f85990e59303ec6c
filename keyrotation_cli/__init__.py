"""`keyrotation`: the operator's and incident responder's command for the key rotation app (docs/cli.md)."""
