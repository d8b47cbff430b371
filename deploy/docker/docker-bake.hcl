// Build every talkserve image: docker buildx bake -f deploy/docker/docker-bake.hcl [--push]
// Override the registry or version: REGISTRY=registry.example.com/talkserve VERSION=0.1.1 docker buildx bake ...

variable "REGISTRY" {
  default = "ghcr.io/talkserve"
}

variable "VERSION" {
  default = "0.1.0"
}

group "default" {
  targets = ["cpu", "gpu"]
}

target "_common" {
  context    = "."
  dockerfile = "deploy/docker/Dockerfile"
  platforms  = ["linux/amd64"]
}

target "cpu" {
  inherits = ["_common"]
  name     = svc
  matrix = {
    svc = ["gateway", "media", "echomimic", "dicetalk", "latentsync", "voice"]
  }
  target = svc
  tags   = ["${REGISTRY}/${svc}:${VERSION}"]
}

// voice is CPU-only (espeak-ng, PocketSphinx, the CPU person engine): no -gpu image.
target "gpu" {
  inherits = ["_common"]
  name     = "${svc}-gpu"
  matrix = {
    svc = ["echomimic", "dicetalk", "latentsync"]
  }
  target = "${svc}-gpu"
  tags   = ["${REGISTRY}/${svc}:${VERSION}-gpu"]
}
