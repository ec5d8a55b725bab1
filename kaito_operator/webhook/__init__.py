"""The validating admission webhook for Workspaces: the TLS server (server.py) and its certificates
(certs.py: issue and renew; keeper.py: keep them in a Secret or read cert-manager's files, and write
the CA bundle into the webhook configuration). The rules themselves are the Workspace package's
(kaito_operator.workspace.validation), shared with the reconciler; this package sits above it."""
