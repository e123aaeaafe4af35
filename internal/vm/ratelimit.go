package vm

import (
	"github.com/nimbus-vmm/nimbus/internal/config"
	"github.com/nimbus-vmm/nimbus/internal/ratelimit"
)

// diskLimiter is the rate limiter disk dc consults: its own
// rate_limiter_config, or the limiter its rate_limit_group shares with the
// group's other disks (made on first use; validation has checked that the
// group exists and that a disk does not name both).
func (m *VM) diskLimiter(dc *config.DiskConfig) *ratelimit.Limiter {
	if dc.RateLimitGroup == "" {
		return ratelimit.New(dc.RateLimiterConfig)
	}
	m.limitMu.Lock()
	defer m.limitMu.Unlock()
	if l, ok := m.limitGroups[dc.RateLimitGroup]; ok {
		return l
	}
	for _, g := range m.rateGroups {
		if g.ID == dc.RateLimitGroup {
			l := ratelimit.New(&g.RateLimiterConfig)
			if m.limitGroups == nil {
				m.limitGroups = map[string]*ratelimit.Limiter{}
			}
			m.limitGroups[g.ID] = l
			return l
		}
	}
	return nil
}
