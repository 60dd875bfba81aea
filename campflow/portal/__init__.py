"""The portal: campflow's web door for local entities, reviewers and collaborators (SPEC §12).

FastAPI with server-rendered Jinja2 pages (`create_app`); every listing and change goes through
`campflow.store.access` and the network's services with the signed-in account's actor."""
