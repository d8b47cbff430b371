"""Engines behind the model services: the contract (protocol), finding and building one by
entry point (loader), device placement for torch engines (device) and the built-in talkface
adapter (talkface). No gRPC in here: the services translate, engines render."""
