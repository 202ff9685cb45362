"""Connection forms of the three connection types, declared once.

The same declaration feeds both ways Airflow reads a connection form:

* Airflow 3.2+ reads ``conn-fields`` / ``ui-field-behaviour`` from the provider metadata
  (:func:`airflow_provider_querytasks.get_provider_info.get_provider_info`) without importing
  the hook;
* Airflow 2.11 and 3.0/3.1 call the hook's ``get_connection_form_widgets()`` and
  ``get_ui_field_behaviour()``, which the hooks build from the same objects.

This module is imported by the provider metadata, so it holds data only (no HTTP libraries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FieldKind = Literal["string", "password", "boolean"]


@dataclass(frozen=True)
class ExtraField:
    """One extra field of a connection form.

    :param name: key in the connection's extra JSON.
    :param label: label shown in the UI.
    :param description: help text shown under the field.
    :param kind: ``string``, ``password`` (masked in the UI and in logs) or ``boolean``.
    :param placeholder: example value shown in an empty field.
    :param default: default value; ``None`` for none.
    :param choices: allowed values, if the field is an enumeration.
    """

    name: str
    label: str
    description: str
    kind: FieldKind = "string"
    placeholder: str | None = None
    default: Any = None
    choices: tuple[str, ...] = ()

    def to_conn_field(self) -> dict[str, Any]:
        """The Airflow 3.2+ ``conn-fields`` entry (a JSON schema)."""
        json_type = "boolean" if self.kind == "boolean" else "string"
        schema: dict[str, Any] = {"type": [json_type, "null"]}
        if self.kind == "password":
            schema["format"] = "password"
        if self.default is not None:
            schema["default"] = self.default
        if self.choices:
            schema["enum"] = [*self.choices, None]
        if self.placeholder and not self.choices and self.kind == "string":
            # Airflow 3.2+ forms ignore ui-field-behaviour placeholders of extras; a string field
            # with schema examples gets a placeholder ("Start typing to see options") and offers
            # the examples as suggestions.
            schema["examples"] = [self.placeholder]
        return {"label": self.label, "description": self.description, "schema": schema}


@dataclass(frozen=True)
class ConnectionForm:
    """A connection type's form: standard fields relabelled or hidden, plus extras.

    :param connection_type: Airflow connection type, e.g. ``shoplazza``.
    :param hook_class_name: dotted path of the hook that serves it.
    :param hook_name: display name in the connection type list.
    :param hidden_fields: standard fields the form hides.
    :param relabeling: new labels for standard fields.
    :param placeholders: placeholders for standard fields.
    :param extras: the extra fields.
    """

    connection_type: str
    hook_class_name: str
    hook_name: str
    hidden_fields: tuple[str, ...]
    relabeling: dict[str, str]
    placeholders: dict[str, str]
    extras: tuple[ExtraField, ...] = field(default_factory=tuple)

    def ui_field_behaviour(self) -> dict[str, Any]:
        """Field behaviour as ``get_ui_field_behaviour()`` returns it (Airflow 2.x style)."""
        placeholders = dict(self.placeholders)
        placeholders.update({f.name: f.placeholder for f in self.extras if f.placeholder})
        return {
            "hidden_fields": list(self.hidden_fields),
            "relabeling": dict(self.relabeling),
            "placeholders": placeholders,
        }

    def provider_metadata(self) -> dict[str, Any]:
        """The ``connection-types`` item of the provider metadata (Airflow 3.2+ keys included)."""
        behaviour = self.ui_field_behaviour()
        return {
            "connection-type": self.connection_type,
            "hook-class-name": self.hook_class_name,
            "hook-name": self.hook_name,
            "ui-field-behaviour": {
                "hidden-fields": behaviour["hidden_fields"],
                "relabeling": behaviour["relabeling"],
                "placeholders": behaviour["placeholders"],
            },
            "conn-fields": {f.name: f.to_conn_field() for f in self.extras},
        }

    def connection_form_widgets(self) -> dict[str, Any]:
        """The wtforms widgets for ``get_connection_form_widgets()`` (Airflow 2.11, 3.0, 3.1)."""
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, PasswordField, StringField

        try:
            from airflow.www.fab_security.views import BS3PasswordFieldWidget, BS3TextFieldWidget
        except ImportError:  # Airflow 3 web UI no longer uses wtforms widgets
            from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget

        widgets: dict[str, Any] = {}
        for f in self.extras:
            label = lazy_gettext(f.label)
            if f.kind == "boolean":
                widgets[f.name] = BooleanField(label, description=f.description, default=f.default)
            elif f.kind == "password":
                widgets[f.name] = PasswordField(
                    label, widget=BS3PasswordFieldWidget(), description=f.description
                )
            else:
                widgets[f.name] = StringField(
                    label, widget=BS3TextFieldWidget(), description=f.description, default=f.default
                )
        return widgets


_ENDPOINT_HELP = (
    "Base URL replacing the platform's default host (a regional or sandbox host, or a local "
    "emulator). https:// is required; http:// is accepted only for loopback hosts."
)

SHOPLAZZA_FORM = ConnectionForm(
    connection_type="shoplazza",
    hook_class_name="airflow_provider_querytasks.hooks.shoplazza.ShoplazzaHook",
    hook_name="Shoplazza",
    hidden_fields=("schema", "port", "login"),
    relabeling={"host": "Shop", "password": "Access token"},
    placeholders={
        "host": "mystore or mystore.myshoplaza.com",
        "password": "private-app access token (leave empty when using OAuth refresh)",
    },
    extras=(
        ExtraField(
            "api_version",
            "API version",
            "Shoplazza OpenAPI version.",
            placeholder="2022-01",
            default="2022-01",
        ),
        ExtraField("endpoint", "Endpoint", _ENDPOINT_HELP, placeholder="https://mystore.myshoplaza.com"),
        ExtraField(
            "client_id",
            "OAuth client id",
            "Public app client id (OAuth refresh).",
            placeholder="app client id",
        ),
        ExtraField(
            "client_secret",
            "OAuth client secret",
            "Public app client secret (OAuth refresh).",
            kind="password",
        ),
        ExtraField(
            "refresh_token",
            "OAuth refresh token",
            "Refresh token obtained when the store installed the app.",
            kind="password",
        ),
    ),
)

AMAZON_SP_API_FORM = ConnectionForm(
    connection_type="amazon_sp_api",
    hook_class_name="airflow_provider_querytasks.hooks.amazon_data_kiosk.DataKioskHook",
    hook_name="Amazon Selling Partner API",
    hidden_fields=("schema", "port", "host"),
    relabeling={"login": "LWA client id", "password": "LWA client secret"},
    placeholders={"login": "amzn1.application-oa2-client....", "password": "LWA client secret"},
    extras=(
        ExtraField(
            "refresh_token",
            "LWA refresh token",
            "Refresh token from the selling partner's authorisation of the app.",
            kind="password",
        ),
        ExtraField(
            "region",
            "Region",
            "Selling Partner API region: na, eu or fe.",
            placeholder="na",
            default="na",
            choices=("na", "eu", "fe"),
        ),
        ExtraField(
            "sandbox", "Sandbox", "Use the sandbox host of the region.", kind="boolean", default=False
        ),
        ExtraField(
            "endpoint", "Endpoint", _ENDPOINT_HELP, placeholder="https://sellingpartnerapi-na.amazon.com"
        ),
        # Not "lwa_token_url": Airflow masks every extra whose name contains "token".
        ExtraField(
            "lwa_endpoint",
            "LWA endpoint",
            "Login with Amazon token endpoint (default https://api.amazon.com/auth/o2/token).",
            placeholder="https://api.amazon.com/auth/o2/token",
        ),
        ExtraField(
            "selling_partner_id",
            "Selling partner id",
            "Optional: the seller's merchant token (Seller Central > Settings > Account Info > "
            "Business Information > Merchant Token, e.g. A21CXK3C4ERTY8), or a vendor's group id. "
            "Notifications say amzn1.merchant.o.A21CXK3C4ERTY8 or amzn1.vg.6213651: either form "
            "matches. Scopes rate limits and matches notifications.",
            placeholder="A21CXK3C4ERTY8 (merchant token)",
        ),
    ),
)

ADOBE_EXPERIENCE_PLATFORM_FORM = ConnectionForm(
    connection_type="adobe_experience_platform",
    hook_class_name="airflow_provider_querytasks.hooks.adobe_query_service.AdobeQueryServiceHook",
    hook_name="Adobe Experience Platform",
    hidden_fields=("schema", "port", "host"),
    relabeling={"login": "Client id (API key)", "password": "Client secret"},
    placeholders={"login": "OAuth server-to-server client id", "password": "client secret"},
    extras=(
        ExtraField(
            "org_id",
            "IMS organisation id",
            "Organisation id, ending in @AdobeOrg.",
            placeholder="ABCDEF0123456789@AdobeOrg",
        ),
        ExtraField("sandbox", "Sandbox", "Sandbox name, lower case.", placeholder="prod", default="prod"),
        ExtraField(
            "scopes",
            "Scopes",
            "Comma-separated OAuth scopes from the Developer Console project.",
            placeholder="openid,AdobeID,read_organizations,additional_info.projectedProductContext,session",
        ),
        ExtraField("endpoint", "Endpoint", _ENDPOINT_HELP, placeholder="https://platform.adobe.io"),
        # Not "ims_token_url": Airflow masks every extra whose name contains "token".
        ExtraField(
            "ims_endpoint",
            "IMS endpoint",
            "Adobe IMS token endpoint (default https://ims-na1.adobelogin.com/ims/token/v3).",
            placeholder="https://ims-na1.adobelogin.com/ims/token/v3",
        ),
    ),
)

#: Query Service's PostgreSQL interface: the same credentials, plus what a PostgreSQL session needs
#: (a connection type of its own: common.sql finds a SQL hook by connection type; docs/adobe_sql.md).
ADOBE_QUERY_SERVICE_SQL_FORM = ConnectionForm(
    connection_type="adobe_query_service_sql",
    hook_class_name="airflow_provider_querytasks.hooks.adobe_query_service_sql.AdobeQueryServiceSqlHook",
    hook_name="Adobe Experience Platform Query Service (SQL)",
    hidden_fields=("port", "host"),
    relabeling={**ADOBE_EXPERIENCE_PLATFORM_FORM.relabeling, "schema": "Database (default <sandbox>:all)"},
    placeholders={**ADOBE_EXPERIENCE_PLATFORM_FORM.placeholders, "schema": "prod:all"},
    extras=(
        *ADOBE_EXPERIENCE_PLATFORM_FORM.extras,
        ExtraField(
            "technical_account_password",
            "Technical account credential",
            "Optional non-expiring PostgreSQL password, technicalAccountId:credential, from Query "
            "Service's /queryauth/accounts. Empty: the IMS access token is the password.",
            kind="password",
        ),
        ExtraField(
            "sslmode",
            "SSL mode",
            "PostgreSQL sslmode: require (default), verify-ca or verify-full; prefer or disable "
            "only for a loopback host (a local emulator).",
            placeholder="require",
            default="require",
            choices=("require", "verify-ca", "verify-full", "prefer", "disable"),
        ),
    ),
)

ALL_FORMS: tuple[ConnectionForm, ...] = (
    SHOPLAZZA_FORM,
    AMAZON_SP_API_FORM,
    ADOBE_EXPERIENCE_PLATFORM_FORM,
    ADOBE_QUERY_SERVICE_SQL_FORM,
)
