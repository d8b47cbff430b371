"""talkface: talkserve's built-in talking-head engine (no gRPC, no protobuf in here)."""
