package rooms

import (
	"context"
	"fmt"
	"time"
)

// Position returns the value kept under name by SetPosition, "" for none,
// as the Store holds it (see Store.Position).
func (m *Manager) Position(name string) (string, error) {
	ctx, cancel := m.storeContext()
	defer cancel()
	v, err := m.config().Store.Position(ctx, name)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return v, nil
}

// SetPosition keeps value under name in the Store, for every process
// sharing it, as durably as it keeps messages; "" forgets name.
func (m *Manager) SetPosition(name, value string) error {
	ctx, cancel := m.storeContext()
	defer cancel()
	if err := m.config().Store.SetPosition(ctx, name, value); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Lease grants name to holder for ttl, or renews it, and reports whether
// holder holds it: one holder at a time among the processes sharing the
// Store (see Store.Lease).
func (m *Manager) Lease(name, holder string, ttl time.Duration) (bool, error) {
	ctx, cancel := m.storeContext()
	defer cancel()
	ok, err := m.config().Store.Lease(ctx, name, holder, ttl)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return ok, nil
}

// ReleaseLease ends holder's lease of name, if it holds it. ctx bounds the
// call as the store timeout does: a holder that stops need not wait for a
// lease that expires anyway.
func (m *Manager) ReleaseLease(ctx context.Context, name, holder string) error {
	ctx, cancel := m.storeContextWithin(ctx)
	defer cancel()
	if err := m.config().Store.ReleaseLease(ctx, name, holder); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}
