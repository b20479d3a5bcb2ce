"""Client protocol fronts: each translates one wire format to the proxy's turn and back.

The proxy's conversation model is the Chat Completions message list (system, user, assistant with
``tool_calls``, tool results); a front maps its client's request onto it, runs the one shared
tool loop (:class:`gateway.proxy.loop.Proxy`), and maps the answer — streamed or not — back into
its own format. Conversation state, tools, limits, logging and UI semantics stay in the proxy.
"""
