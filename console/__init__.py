"""The billing console: the portal's and the admin console's billing pages.

A server-rendered client of the gateway's HTTP API (never gRPC, never a
database): every page is built from gateway answers fetched with the
signed-in user's bearer token (docs/console.md).
"""
