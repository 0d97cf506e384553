"""``/console``: the operator's page, served by the gateway itself beside the playground.

Static files in ``static/`` (package data; no CDN, no build step) call the admin API
from the browser with the admin key the operator types: tenants and their keys,
``/admin/usage`` (spend over time and budgets), adapters, collections and the audit log.
"""
