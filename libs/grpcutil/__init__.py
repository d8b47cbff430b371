"""gRPC scaffolding shared by talkserve's services: server factory, model-job runner, error mapping."""
