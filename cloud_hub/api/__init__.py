"""The HTTP API, one router module per resource; ``cloud_hub.api.app.create_app`` builds
the app. Not re-exported here: ``cloud_hub.queries`` imports ``cloud_hub.schemas``,
so importing the app from this package would import the query layer back (a cycle)."""
