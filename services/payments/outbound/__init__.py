"""Outbound webhooks: an org's own endpoints hear about its invoices, payments,
subscriptions and usage alerts (docs/integrations.md#outbound-webhooks).

A component of the payments service with tables of its own in the payments
schema (declared in repository/tables.py beside the others): domain.py
(pure), store.py (SQL), handlers.py (use cases), consumers.py (the
producers' streams -> delivery rows), dispatcher.py (HTTP sends between two
units of work), grpc_api.py (the endpoints API)."""
