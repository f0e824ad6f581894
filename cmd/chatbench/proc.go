package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times;
// 100 on every Linux this runs on.
const clockTicks = 100

// cpuTicks returns the user plus system CPU time the process has used.
func cpuTicks(pid int) (int64, error) {
	if pid == 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading server CPU time: %w", err)
	}
	// The command name may hold spaces; fields start after its ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	return utime + stime, nil
}

// rssKiB returns the resident memory of the process.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading server memory: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// fsyncEvents are the calls that make a file's data durable, as perf names
// their tracepoints.
var fsyncEvents = []string{"syscalls:sys_enter_fsync", "syscalls:sys_enter_fdatasync"}

// fsyncCounter counts the fsync and fdatasync calls of a process and its
// threads with perf stat, which only counts at the tracepoints and does not
// stop the process as strace would. perf takes a while to attach, seconds
// on a loaded machine, so it starts with counting off and counts between
// enable and disable, each acknowledged once perf has done it.
type fsyncCounter struct {
	cmd      *exec.Cmd
	ctl, ack *os.File // perf's control pipe and the one it acknowledges on
	out      bytes.Buffer
}

// startFsyncCounter starts perf on the process pid, not counting yet.
func startFsyncCounter(pid int) (*fsyncCounter, error) {
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("counting fsyncs: %w", err)
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, fmt.Errorf("counting fsyncs: %w", err)
	}
	c := &fsyncCounter{ctl: ctlW, ack: ackR}
	c.cmd = exec.Command("perf", "stat", "-x", ",", "-e", strings.Join(fsyncEvents, ","),
		"--delay", "-1", "--control", "fd:3,4", "-p", strconv.Itoa(pid))
	c.cmd.ExtraFiles = []*os.File{ctlR, ackW} // fds 3 and 4
	c.cmd.Stderr = &c.out
	err = c.cmd.Start()
	ctlR.Close()
	ackW.Close()
	if err != nil {
		c.ctl.Close()
		c.ack.Close()
		return nil, fmt.Errorf("counting fsyncs: %w", err)
	}
	return c, nil
}

// command sends perf a control command and waits until it is done.
func (c *fsyncCounter) command(cmd string) error {
	if _, err := c.ctl.WriteString(cmd + "\n"); err != nil {
		return fmt.Errorf("perf stat %s: %w", cmd, err)
	}
	if err := c.ack.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return fmt.Errorf("perf stat %s: %w", cmd, err)
	}
	// perf writes "ack\n" with C's terminating NUL, which is left over
	// before the next one.
	var reply []byte
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(c.ack, b); err != nil {
			_, _ = c.stop()
			return fmt.Errorf("perf stat did not acknowledge %s (%w): %s", cmd, err, strings.TrimSpace(c.out.String()))
		}
		if b[0] == '\n' {
			break
		}
		if b[0] != 0 {
			reply = append(reply, b[0])
		}
	}
	if string(reply) != "ack" {
		return fmt.Errorf("perf stat answered %s with %q", cmd, reply)
	}
	return nil
}

// stop ends perf and returns what it counted. It is safe to call more than
// once, and on a counter whose perf has failed.
func (c *fsyncCounter) stop() (int64, error) {
	if c.cmd.ProcessState == nil {
		// perf stat prints its counts when interrupted, then exits with
		// the signal's status.
		_ = c.cmd.Process.Signal(os.Interrupt)
		_ = c.cmd.Wait()
		c.ctl.Close()
		c.ack.Close()
	}
	return parseFsyncs(c.out.String())
}

// parseFsyncs adds up the counts of fsyncEvents in perf stat's CSV output
// (-x ,): "<count>,<unit>,<event>,...", where a count of "<not counted>"
// means that no thread of the process ran while counting.
func parseFsyncs(out string) (int64, error) {
	var total int64
	seen := 0
	for _, line := range strings.Split(out, "\n") {
		fields := strings.Split(line, ",")
		if len(fields) < 3 || !slices.Contains(fsyncEvents, fields[2]) {
			continue
		}
		seen++
		if fields[0] == "<not counted>" {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("perf stat counted %s: %q", fields[2], fields[0])
		}
		total += n
	}
	if seen != len(fsyncEvents) {
		return 0, fmt.Errorf("perf stat did not count fsyncs: %s", strings.TrimSpace(out))
	}
	return total, nil
}
