"""What ``loragate demo`` prints once the gateway is ready: URLs, keys, SDK examples."""

from __future__ import annotations

from pathlib import Path

from gateway.demo.config import ACME, DEMO_MODEL_ID, GLOBEX, DemoTenant
from gateway.demo.keys import DemoKeys
from gateway.settings import Settings

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def base_url(settings: Settings) -> str:
    """Where a browser or client on this machine reaches the gateway."""
    host = settings.server.host
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.server.port}"


def _tenant_line(tenant: DemoTenant, key: str) -> str:
    return (
        f"    {tenant.name:<7} {key}\n"
        f"            tenant {tenant.name}: models {tenant.alias} (= {tenant.adapter} adapter + "
        "locked prompt\n"
        f"            + RAG on '{tenant.collection}'), {tenant.adapter}, {DEMO_MODEL_ID}; "
        "searches only\n"
        f"            its collection '{tenant.collection}' ({tenant.product} manuals)"
    )


def _acme_example(url: str, key: str) -> str:
    return f'''    from openai import OpenAI

    client = OpenAI(base_url="{url}/v1", api_key="{key}")
    reply = client.chat.completions.create(
        model="{ACME.alias}",  # {ACME.adapter} adapter + locked prompt + RAG on {ACME.collection}
        messages=[{{"role": "user", "content": "{ACME.question}"}}],
        max_tokens=160,
    )
    print(reply.choices[0].message.content)
    for c in reply.model_extra["citations"]:  # the numbered sources the answer cites
        print(f"[{{c['number']}}] {{c['title']}} ({{c['source']}})")'''


def _globex_example(url: str, key: str) -> str:
    return f'''    from openai import OpenAI

    client = OpenAI(base_url="{url}/v1", api_key="{key}")
    stream = client.chat.completions.create(
        model="{GLOBEX.alias}",  # {GLOBEX.adapter} adapter + RAG on {GLOBEX.collection}
        messages=[{{"role": "user", "content": "{GLOBEX.question}"}}],
        max_tokens=160,
        stream=True,
        stream_options={{"include_usage": True}},
    )
    for chunk in stream:
        if chunk.choices:
            print(chunk.choices[0].delta.content or "", end="", flush=True)
        citations = (chunk.model_extra or {{}}).get("citations")
        if citations:  # on the chunk that carries the last finish_reason
            print("\\nsources:", [c["source"] for c in citations])'''


def demo_banner(settings: Settings, keys: DemoKeys, config_path: Path) -> str:
    """The text printed once per start, when the gateway answers ``/ready``."""
    url = base_url(settings)
    adapters = ", ".join(a.name for a in settings.adapters)
    admin = keys.key("admin")
    lines = [
        "",
        "=" * 78,
        f"loragate demo is ready: {url}/v1  (base {DEMO_MODEL_ID}; adapters {adapters})",
        "=" * 78,
        "",
        f"  Playground  {url}/playground   (paste a key below; the admin key shows adapters)",
        f"  Console     {url}/console      (admin key: tenants, keys, spend, audit log)",
        f"  Metrics     {url}/metrics      (admin key):",
        f'              curl -H "Authorization: Bearer {admin}" {url}/metrics',
        f"  Keys file   {keys.path}   (mode 0600; the same keys on every run)",
        f"  Config      {config_path}   (key hashes only)",
        "",
        "  API keys",
        f"    {'admin':<7} {admin}",
        "            operator: /admin/* (adapters: list, activate, retire; collections;",
        "            usage; config reload), /metrics, and /v1 with every model, no policy",
        _tenant_line(ACME, keys.key(ACME.name)),
        _tenant_line(GLOBEX, keys.key(GLOBEX.name)),
        "",
        f"  Tenant {ACME.name}, OpenAI SDK (cited answer from the {ACME.product} manuals):",
        "",
        _acme_example(url, keys.key(ACME.name)),
        "",
        f"  Tenant {GLOBEX.name}, OpenAI SDK, streaming (the {GLOBEX.product} FAQ, in Spanish):",
        "",
        _globex_example(url, keys.key(GLOBEX.name)),
        "",
        "=" * 78,
        "",
    ]
    return "\n".join(lines)
