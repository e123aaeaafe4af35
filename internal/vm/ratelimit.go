package vm

import (
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/ratelimit"
)

// groupLimiters makes one limiter per rate_limit_group, shared by the
// group's disks at boot and hot add.
func groupLimiters(groups []config.RateLimiterGroupConfig) map[string]*ratelimit.Limiter {
	m := make(map[string]*ratelimit.Limiter, len(groups))
	for _, g := range groups {
		m[g.ID] = ratelimit.New(&g.RateLimiterConfig)
	}
	return m
}

// diskLimiter is the rate limiter disk dc consults: its own
// rate_limiter_config, or its rate_limit_group's (validation has checked
// that the group exists and that a disk does not name both).
func (m *VM) diskLimiter(dc *config.DiskConfig) *ratelimit.Limiter {
	if dc.RateLimitGroup == "" {
		return ratelimit.New(dc.RateLimiterConfig)
	}
	return m.limitGroups[dc.RateLimitGroup]
}
