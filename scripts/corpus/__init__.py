"""The training-corpus recipe: a declarative source list (``sources.toml``) and its builder.

``recipe`` holds the pieces that need no network and no Debian tools (the
excluded-source check, clip rules, mixing, generated silence, manifest,
summary, checksums); ``build`` drives a real build (``bash scripts/corpus/build.sh OUT``).
"""
