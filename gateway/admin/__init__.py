"""Operating the gateway: admin service, test runs, the REST API under /api, the dashboard."""
