"""The catalog's use cases: one async function per command or query.

Each takes a ``CatalogUnitOfWork`` that the caller opened and, for mutations,
commits (through ``run_mutation``) so the change, its outbox events and the
stored AIP-155 response land in one transaction.
"""
