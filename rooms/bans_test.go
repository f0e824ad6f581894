package rooms

import (
	"fmt"
	"testing"
	"time"
)

// TestBannedByTheBanThatEndsLast: of two bans on one subject, the one that
// ends last answers, and lifting it leaves the other in force.
func TestBannedByTheBanThatEndsLast(t *testing.T) {
	var l BanList
	now := time.Now()
	l.Put(Ban{ID: "day", Room: "lobby", Subject: "ip:192.0.2.1", Expires: now.Add(24 * time.Hour)})
	l.Put(Ban{ID: "ever", Room: AllRooms, Subject: "ip:192.0.2.1"})
	if b, ok := l.Banned("lobby", "ip:192.0.2.1"); !ok || b.ID != "ever" {
		t.Fatalf("banned by %q (%v), want the ban for ever", b.ID, ok)
	}
	l.Remove("ever")
	if b, ok := l.Banned("lobby", "ip:192.0.2.1"); !ok || b.ID != "day" {
		t.Fatalf("banned by %q (%v) once the ban for ever was lifted, want the day's", b.ID, ok)
	}
	if _, ok := l.Banned("other", "ip:192.0.2.1"); ok {
		t.Fatal("the lobby's ban holds in another room")
	}
}

// BenchmarkBanned is the cost a post pays to learn its author is not
// banned: with no ban held, and among many.
func BenchmarkBanned(b *testing.B) {
	for _, held := range []int{0, 10000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			var l BanList
			for i := range held {
				l.Put(Ban{ID: fmt.Sprint(i), Room: "lobby", Subject: fmt.Sprintf("ip:10.0.%d.%d", i/256, i%256), Expires: time.Now().Add(time.Hour)})
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, banned := l.Banned("lobby", "id:alice"); banned {
						b.Fatal("alice is banned")
					}
				}
			})
		})
	}
}

// TestBannedWhileReplaced: while a shared store's bans are read again and
// replaced by the same list, a post by the banned author is held out
// throughout, never let through between the old list and the new.
func TestBannedWhileReplaced(t *testing.T) {
	var l BanList
	bans := []Ban{{ID: "b1", Room: "lobby", Subject: "user:bob", Created: time.Now()}}
	l.Replace(bans)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				l.Replace(bans)
			}
		}
	}()
	for range 200_000 {
		if _, banned := l.Banned("lobby", "user:bob"); !banned {
			close(stop)
			<-done
			t.Fatal("a banned author passed while the bans were replaced by the same list")
		}
	}
	close(stop)
	<-done
}
