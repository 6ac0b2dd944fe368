package main

import (
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"wasessions/internal/config"
	"wasessions/internal/logging"
	"wasessions/internal/netguard"
	"wasessions/internal/queue"
	"wasessions/internal/store"
	"wasessions/internal/webhook"
	"wasessions/tasks"
)

// newWebhooks builds the worker's webhook delivery: a dispatcher and an
// asynq server of its own on the webhooks queue, so slow receivers use
// WEBHOOK_CONCURRENCY slots and never the session tasks' ones.
func newWebhooks(cfg config.Config, rdb redis.UniversalClient, st *store.Store, enq *queue.Enqueuer,
	reg prometheus.Registerer, log *slog.Logger) (*webhook.Service, error) {
	sealer, err := webhook.NewSealer(cfg.WebhookSecretKey)
	if err != nil {
		return nil, err
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       cfg.WebhookConcurrency,
		Queues:            map[string]int{tasks.QueueWebhooks: 1},
		TaskCheckInterval: 100 * time.Millisecond,
		ShutdownTimeout:   15 * time.Second,
		Logger:            logging.Asynq(log),
		LogLevel:          asynq.WarnLevel,
	})
	return webhook.NewService(webhook.Options{
		Schedule:     cfg.WebhookRetrySchedule,
		PerEndpoint:  cfg.WebhookEndpointConcurrency,
		DisableAfter: cfg.WebhookDisableAfter,
		PollInterval: cfg.WebhookPollInterval,
	}, webhook.ServiceDeps{
		Store:    st,
		Enqueuer: enq,
		Sealer:   sealer,
		Guard:    netguard.Guard{AllowHTTP: cfg.WebhookAllowHTTP, AllowPrivate: cfg.WebhookAllowPrivate},
		Metrics:  webhook.NewMetrics(reg),
		Log:      log.With("component", "webhooks"),
		Server:   srv,
	}), nil
}
