"""What both front doors share: who is calling (``auth``), turning a request into a ``RequestContext``
(``intake``) and building what serves it from ``Settings`` (``assembly``). The gateway (ASGI) and the wrapper
(an httpx transport under the SDK) keep only their own wire."""
