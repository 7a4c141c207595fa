"""comfykube_bot: the Discord bot that turns `/imagine` into ImageJobs and posts the results."""
