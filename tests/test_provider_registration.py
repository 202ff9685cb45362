"""The provider is registered the way Airflow reads providers, on the running Airflow line."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_querytasks.connection_forms import ALL_FORMS
from airflow_provider_querytasks.get_provider_info import get_provider_info
from airflow_provider_querytasks.version_compat import AIRFLOW_V_3_2_PLUS

CONNECTION_TYPES = {"shoplazza", "amazon_sp_api", "adobe_experience_platform", "adobe_query_service_sql"}
ROOT = Path(__file__).resolve().parent.parent


def test_provider_info_matches_airflows_schema() -> None:
    import airflow

    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    info = get_provider_info()
    jsonschema.validate(info, json.loads(schema_path.read_text()))
    assert info["package-name"] == "airflow-provider-querytasks"
    assert {c["connection-type"] for c in info["connection-types"]} == CONNECTION_TYPES


def test_every_version_added_is_a_listed_release_and_the_first_is_this_package() -> None:
    """``versions`` lists the releases newest first; an option cannot be added in another one."""
    from airflow_provider_querytasks import __version__

    info = get_provider_info()
    assert info["versions"][0] == __version__
    options = [
        (section, name, option)
        for section, body in info["config"].items()
        for name, option in body["options"].items()
    ]
    assert options
    for section, name, option in options:
        assert option["version_added"] in info["versions"], f"[{section}] {name}"
    if info["versions"] == [__version__]:  # the first release: everything was added in it
        assert {option["version_added"] for _, _, option in options} == {__version__}


def test_every_integration_has_a_how_to_guide_and_the_platforms_own_docs() -> None:
    from urllib.parse import urlsplit

    info = get_provider_info()
    own_hosts = {"github.com", "airflow-provider-querytasks.github.io", "pypi.org"}
    integrations = info["integrations"]
    assert {i["integration-name"] for i in integrations} == {
        entry["integration-name"]
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
    }
    urls = [i["external-doc-url"] for i in integrations]
    assert len(set(urls)) == len(urls), "each platform has its own documentation"
    for integration in integrations:
        url = urlsplit(integration["external-doc-url"])
        assert url.scheme == "https", integration
        assert url.hostname not in own_hosts, f"{url.geturl()} is the project's page, not the platform's"
        assert "querytasks" not in url.geturl(), url.geturl()
        guides = integration["how-to-guide"]
        assert guides, integration["integration-name"]
        for guide in guides:
            prefix = f"/docs/{info['package-name']}/"
            assert guide.startswith(prefix), guide
            page = ROOT / "docs" / guide.removeprefix(prefix)
            if (ROOT / "docs").is_dir():  # a source tree: the guide is one of its pages
                assert page.is_file(), f"{guide}: no {page.relative_to(ROOT)}"


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
    if not AIRFLOW_V_3_2_PLUS and importlib.util.find_spec("flask_appbuilder") is None:
        # 3.0 and 3.1 build this metadata from every hook's wtforms widgets and behaviour, and
        # only where flask_appbuilder is installed (for Airflow's own hooks too).
        pytest.skip("Airflow < 3.2 without flask_appbuilder has no connection-form metadata")
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
