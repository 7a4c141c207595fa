"""Prometheus metrics of the bot, in a registry of its own (several bots can live in one test process).

Discord 429s are counted from two places: the bot's own handling of a 429 it
sees, and discord.py's log lines for the 429s it retries internally (it has no
hook for them; its "rate limited" warnings are the only signal).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "BotMetrics", "RateLimitLogCounter"]


class BotMetrics:
    """All counters, gauges and histograms the bot exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.interactions = Counter(
            "comfykube_bot_interactions_total",
            "Interactions handled, by kind (command/button/autocomplete), name and outcome.",
            ["kind", "name", "outcome"],
            registry=r,
        )
        self.refusals = Counter(
            "comfykube_bot_refusals_total", "Requests refused by policy, by reason.", ["reason"], registry=r
        )
        self.defer_seconds = Histogram(
            "comfykube_bot_defer_seconds",
            "From receiving an interaction to its deferral being accepted by Discord.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 3),
            registry=r,
        )
        self.rate_limited = Counter(
            "comfykube_bot_discord_429_total", "429 Too Many Requests answers from Discord.", ["source"], registry=r
        )
        self.edits = Counter(
            "comfykube_bot_message_edits_total",
            "Job message edits, by route (token/bot) and outcome.",
            ["route", "outcome"],
            registry=r,
        )
        self.coalesced = Counter(
            "comfykube_bot_edits_coalesced_total", "Job states replaced by a newer one before being sent.", registry=r
        )
        self.preview_edits = Counter(
            "comfykube_bot_preview_edits_total",
            "Job message edits that showed a new live preview (at most one per message per edit interval).",
            registry=r,
        )
        self.posts = Counter(
            "comfykube_bot_messages_posted_total", "New messages posted with the bot token, by outcome.", ["outcome"],
            registry=r,
        )
        self.jobs_created = Counter("comfykube_bot_jobs_created_total", "ImageJobs created by the bot.", registry=r)
        self.deliveries = Counter(
            "comfykube_bot_results_delivered_total", "Terminal job results shown in Discord, by phase.", ["phase"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "comfykube_bot_watch_events_total", "ImageJob watch events seen, by type.", ["type"], registry=r
        )
        self.tracked_messages = Gauge(
            "comfykube_bot_tracked_messages", "Job messages with edits pending or recently sent.", registry=r
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class RateLimitLogCounter(logging.Handler):
    """Counts discord.py's "rate limited" warnings (429s it retried by itself)."""

    def __init__(self, metrics: BotMetrics) -> None:
        super().__init__(level=logging.WARNING)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        """Increment the 429 counter for matching records; never raises."""
        try:
            text = record.getMessage()
        except Exception:  # a broken log record must not break logging
            return
        if "rate limited" in text or "rate limit" in text.lower():
            self.metrics.rate_limited.labels(source="discord.py").inc()
