"""The provider is registered the way Airflow reads providers, on the running Airflow line."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_querytasks.connection_forms import ALL_FORMS
from airflow_provider_querytasks.get_provider_info import get_provider_info

CONNECTION_TYPES = {"shoplazza", "amazon_sp_api", "adobe_experience_platform", "adobe_query_service_sql"}


def test_provider_info_matches_airflows_schema() -> None:
    import airflow

    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    info = get_provider_info()
    jsonschema.validate(info, json.loads(schema_path.read_text()))
    assert info["package-name"] == "airflow-provider-querytasks"
    assert {c["connection-type"] for c in info["connection-types"]} == CONNECTION_TYPES


def test_every_listed_module_and_hook_class_imports() -> None:
    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[kind]:
            for module in entry.get("python-modules", []):
                importlib.import_module(module)
    for conn in info["connection-types"]:
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == conn["connection-type"]


def test_providers_manager_sees_the_provider_and_its_connection_types() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-querytasks" in manager.providers
    hooks = manager.hooks
    for conn_type in CONNECTION_TYPES:
        info = hooks[conn_type]
        assert info is not None, conn_type
        assert info.package_name == "airflow-provider-querytasks"


@pytest.mark.parametrize("form", ALL_FORMS, ids=lambda f: f.connection_type)
def test_connection_forms_have_endpoint_placeholders_and_help(form: object) -> None:
    from airflow_provider_querytasks.connection_forms import ConnectionForm

    assert isinstance(form, ConnectionForm)
    names = {f.name for f in form.extras}
    assert "endpoint" in names
    assert all(f.description for f in form.extras)
    behaviour = form.ui_field_behaviour()
    assert behaviour["placeholders"]
    metadata = form.provider_metadata()
    assert set(metadata["conn-fields"]) == names
    secret_fields = {f.name for f in form.extras if f.kind == "password"}
    for name in secret_fields:
        assert metadata["conn-fields"][name]["schema"]["format"] == "password"


def test_token_endpoint_extras_exist_and_no_plain_extra_name_is_masked() -> None:
    """Airflow shows every extra whose name holds a sensitive word as ``***``: URLs must not."""
    from airflow_provider_querytasks.compat import redact

    extras = {f.connection_type: {e.name for e in f.extras} for f in ALL_FORMS}
    assert "lwa_endpoint" in extras["amazon_sp_api"]
    assert "ims_endpoint" in extras["adobe_experience_platform"]
    for form in ALL_FORMS:
        for field in form.extras:
            value = "https://example.test/x"
            shown = redact(value, name=field.name)
            if field.kind == "password":
                assert shown != value, field.name
            else:
                assert shown == value, f"{form.connection_type}.{field.name} would show as ***"


@pytest.mark.parametrize(
    ("hook_path", "old", "new", "url"),
    [
        (
            "airflow_provider_querytasks.hooks.amazon_data_kiosk.DataKioskHook",
            "lwa_token_url",
            "lwa_endpoint",
            "https://lwa.example.test/auth/o2/token",
        ),
        (
            "airflow_provider_querytasks.hooks.adobe_query_service.AdobeQueryServiceHook",
            "ims_token_url",
            "ims_endpoint",
            "https://ims.example.test/ims/token/v3",
        ),
    ],
)
def test_the_old_token_url_extras_still_read_with_a_deprecation_warning(
    hook_path: str, old: str, new: str, url: str
) -> None:
    from airflow_provider_querytasks.compat import AirflowProviderDeprecationWarning

    module, _, name = hook_path.rpartition(".")
    hook = getattr(importlib.import_module(module), name)("some_conn")
    with pytest.warns(AirflowProviderDeprecationWarning, match=f"{old!r} is deprecated; rename it {new!r}"):
        assert hook.extra_value({old: url}, new) == url
    with pytest.warns(AirflowProviderDeprecationWarning):
        assert hook.extra_value({f"extra__{hook.conn_type}__{old}": url}, new) == url
    # The new name wins, silently.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hook.extra_value({new: url, old: "https://other.test"}, new) == url


def test_hook_names_are_the_same_in_the_hook_class_and_the_metadata() -> None:
    info = get_provider_info()
    for conn in info["connection-types"]:
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.hook_name == conn["hook-name"]


def test_airflow_3_ui_metadata_has_placeholders_for_standard_fields_and_extras() -> None:
    """What the 3.2+ connection form reads (``GET /ui/connections/hook_meta``).

    Its form shows ``ui-field-behaviour`` placeholders only for the standard fields; a string
    extra gets a placeholder and suggestions from its schema's ``examples``.
    """
    services = pytest.importorskip("airflow.api_fastapi.core_api.services.ui.connections")
    metas = {m.connection_type: m for m in services.HookMetaService.hook_meta_data()}
    for form in ALL_FORMS:
        meta = metas[form.connection_type]
        assert meta.hook_name == form.hook_name
        standard = meta.standard_fields
        assert standard is not None
        for standard_name, placeholder in form.placeholders.items():
            # The 3.x model names the schema field url_schema (BaseModel.schema is a method).
            field_name = {"schema": "url_schema"}.get(standard_name, standard_name)
            assert getattr(standard, field_name).placeholder == placeholder
        extras = dict(meta.extra_fields or {})
        assert set(extras) == {f.name for f in form.extras}
        for field in form.extras:
            schema = extras[field.name]["schema"]
            assert schema["title"] == field.label
            if field.placeholder and field.kind == "string" and not field.choices:
                assert schema["examples"] == [field.placeholder], field.name


@pytest.mark.parametrize("form", ALL_FORMS, ids=lambda f: f.connection_type)
def test_legacy_connection_form_widgets_build(form: object) -> None:
    """Airflow 2.11 - 3.1 call get_connection_form_widgets() (wtforms) when the web UI starts."""
    pytest.importorskip("flask_appbuilder")
    from airflow_provider_querytasks.connection_forms import ConnectionForm

    assert isinstance(form, ConnectionForm)
    widgets = form.connection_form_widgets()
    assert set(widgets) == {f.name for f in form.extras}
