"""Provider metadata, read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_querytasks.connection_forms import ALL_FORMS

_PACKAGE = "airflow_provider_querytasks"
_DISTRIBUTION = "airflow-provider-querytasks"
_PLATFORMS = {
    "shoplazza": "Shoplazza",
    "amazon_data_kiosk": "Amazon Selling Partner API Data Kiosk",
    "adobe_query_service": "Adobe Experience Platform Query Service",
}
#: Per integration: the platform's own documentation of the API the provider calls.
_EXTERNAL_DOCS = {
    "shoplazza": "https://shoplazza.dev/reference/data-copy",
    "amazon_data_kiosk": "https://developer-docs.amazon.com/sp-api/docs/data-kiosk-api-v2023-11-15-reference",
    "adobe_query_service": "https://experienceleague.adobe.com/docs/experience-platform/query/api/queries.html",
}
#: Per integration: its guide, as ``/docs/<package-name>/<page>`` (the form of Airflow's
#: ``provider.yaml``, where the path must start with ``/docs/``); ``<page>`` is the page's path
#: under the repository's ``docs/``.
_HOW_TO_GUIDES = {
    "shoplazza": "shoplazza.md",
    "amazon_data_kiosk": "data_kiosk.md",
    "adobe_query_service": "adobe_query_service.md",
}


#: Modules beside a platform's own (Query Service's PostgreSQL interface: the ``adobe-sql`` extra).
_EXTRA_MODULES = {
    ("hooks", "adobe_query_service"): "adobe_query_service_sql",
    ("operators", "adobe_query_service"): "adobe_query_service_sql",
}


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [
        {
            "integration-name": name,
            "python-modules": [
                f"{_PACKAGE}.{kind}.{module}",
                *(
                    [f"{_PACKAGE}.{kind}.{_EXTRA_MODULES[kind, module]}"]
                    if (kind, module) in _EXTRA_MODULES
                    else []
                ),
            ],
        }
        for module, name in _PLATFORMS.items()
    ]


def get_provider_info() -> dict[str, Any]:
    """Return the provider-info dict Airflow validates against ``provider_info.schema.json``."""
    from airflow_provider_querytasks import __version__

    return {
        "package-name": _DISTRIBUTION,
        "name": "Query Tasks",
        "description": (
            "Asynchronous query tasks on Shoplazza (data query tasks), Amazon Selling Partner API "
            "(Data Kiosk) and Adobe Experience Platform (Query Service): submit, wait (deferrable), fetch."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": name,
                "external-doc-url": _EXTERNAL_DOCS[module],
                "how-to-guide": [f"/docs/{_DISTRIBUTION}/{_HOW_TO_GUIDES[module]}"],
                "tags": ["service"],
            }
            for module, name in _PLATFORMS.items()
        ],
        "connection-types": [form.provider_metadata() for form in ALL_FORMS],
        "hooks": _by_kind("hooks"),
        "operators": _by_kind("operators"),
        "sensors": _by_kind("sensors"),
        "triggers": _by_kind("triggers"),
        "config": {
            "querytasks": {
                "description": "Settings of airflow-provider-querytasks.",
                "options": {
                    "coalesce_polls": {
                        "description": (
                            "Coalesce the status polls of the deferred waits on one account in a "
                            "triggerer: one shared poller per account answers many waits with one "
                            "list call (falling back to one status call per query where the list "
                            "cannot answer) and wakes a wait as soon as a list call shows its "
                            "query finished. False: every wait polls its own query."
                        ),
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": None,
                        "default": "True",
                    }
                },
            }
        },
        "extra-links": [
            f"{_PACKAGE}.links.adobe_query_service.AdobeQueryLink",
            f"{_PACKAGE}.links.adobe_query_service.AdobeScheduledQueryLink",
        ],
    }
