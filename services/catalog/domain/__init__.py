"""The catalog's pure model: metrics, charge models, packages and their rules.

Imports nothing that does I/O (no SQLAlchemy, gRPC or protobuf), so every rule
is unit-tested in isolation.
"""
