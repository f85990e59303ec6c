"""The sample consumer's own code: settings, credential, key holder, Key Vault reader, acknowledger.

Self-contained on purpose: a consumer is deployed on its own and must not import the rotation app.
"""
