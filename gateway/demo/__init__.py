"""``loragate demo``: the whole product on one machine, with no file to edit.

* ``runner``: build the demo kit (model + persona adapters), the keys and the
  knowledge base once, write the config, serve, and print the banner when ready.
* ``keys``: the demo's API keys, made on the first run and kept (0600) in the cache.
* ``knowledge``: the fictional products' manuals and FAQs (``kb/``), ingested once.
* ``config``: the two tenants, their aliases, policies and collections; the admin key.
* ``banner``: the keys, URLs and OpenAI SDK examples printed once per start.
"""
