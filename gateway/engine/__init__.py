"""Running one action: arguments, rendering, credentials, limits, the call, trimming, the record."""
