#!/usr/bin/perl
#
# Clients logging in over and over, each a process of its own.
#
#   login-load.pl --port 8080 --body '{"email":...,"password":...}'
#                 [--host 127.0.0.1] [--path /api/auth/login/json]
#                 [--clients 40] [--duration 15] [--timeout 2]
#                 [--max-wait 60] [--within 2] [--label run]
#
# A client opens a connection, sends the POST (Connection: close), reads
# the answer to its end, and starts over until --duration seconds have
# passed; the attempt under way then still ends by the client's rule.
# With --timeout a client gives up on an attempt not answered in that
# many seconds, closes the connection and tries again at once: a user
# pressing "log in" again.  Without it the client waits as long as it
# takes (up to --max-wait, a safety net, counted as a timeout).  After an
# answer other than 200 the client waits for Retry-After when there is
# one (the server asks for it), or 0.1 s, so that a fast refusal does not
# turn it into a busy loop.
#
# Each attempt's outcome is one short line on a pipe shared by the
# clients (a write under PIPE_BUF is never interleaved).  At the end one
# report and one line of exact numbers:
#
#   RESULT label=... clients=N seconds=S attempts=N answered=N ok=N
#          s503=N other=N other_codes=CODE:N,... timeouts=N errors=N
#          retry_after=N ok_per_s=R within_share=F ok_within_share=F
#          p50_ms= p90_ms= p99_ms= max_ms= ok_p50_ms= ok_p99_ms=
#
# Latencies are those of answered attempts (any status; ok_ those of the
# 200s); within_share is the share of all attempts answered within
# --within seconds, ok_within_share of them answered 200.

use strict;
use warnings;

use Getopt::Long;
use IO::Select;
use IO::Socket::INET;
use POSIX qw(ceil);
use Time::HiRes qw(time sleep);

my %o = (host => '127.0.0.1', port => 8080, path => '/api/auth/login/json',
         clients => 40, duration => 15, timeout => 0, 'max-wait' => 60,
         within => 2, label => 'run', body => '');

GetOptions(\%o, 'host=s', 'port=i', 'path=s', 'body=s', 'clients=i',
           'duration=f', 'timeout=f', 'max-wait=f', 'within=f', 'label=s')
    and $o{body} ne '' and $o{clients} > 0
    or die "usage: login-load.pl --port PORT --body JSON [options]\n";

my $request = "POST $o{path} HTTP/1.1\r\n"
    . "Host: $o{host}:$o{port}\r\n"
    . "User-Agent: nginx-chat-bench\r\n"
    . "Content-Type: application/json\r\n"
    . "Content-Length: " . length($o{body}) . "\r\n"
    . "Connection: close\r\n\r\n"
    . $o{body};

# the longest an attempt may take: the client's patience
my $limit = $o{timeout} > 0 ? $o{timeout} : $o{'max-wait'};


# one attempt: (milliseconds, outcome, Retry-After); the outcome is the
# status code, "timeout" or "error"
sub attempt {
    my $t0 = time;
    my $left = sub { $t0 + $limit - time };
    my $ms = sub { sprintf "%.3f", (time - $t0) * 1000 };

    my $s = IO::Socket::INET->new(PeerAddr => $o{host}, PeerPort => $o{port},
                                  Proto => 'tcp', Timeout => $left->());
    unless ($s) {
        return ($ms->(), $left->() <= 0 ? 'timeout' : 'error', '');
    }

    my $off = 0;
    while ($off < length $request) {
        my $n = syswrite($s, $request, length($request) - $off, $off);
        return ($ms->(), 'error', '') unless defined $n;
        $off += $n;
    }

    my $sel = IO::Select->new($s);
    my $buf = '';
    for (;;) {
        my $wait = $left->();
        if ($wait <= 0) {
            close $s;
            return ($ms->(), 'timeout', '');
        }
        next unless $sel->can_read($wait);

        my $n = sysread($s, $buf, 65536, length $buf);
        return ($ms->(), 'error', '') unless defined $n;
        last if $n == 0;
    }
    close $s;

    my $took = $ms->();
    return ($took, 'error', '') unless $buf =~ m{^HTTP/1\.[01] (\d{3})};
    my $code = $1;
    my ($head) = split /\r\n\r\n/, $buf, 2;
    my ($ra) = $head =~ /\r\nRetry-After:[ \t]*(\d+)/i;

    return ($took, $code, $ra // '');
}


# ---------------------------------------------------------------- clients

pipe(my $r, my $w) or die "pipe: $!\n";

my $start = time;
my $end = $start + $o{duration};
my @kids;

for (1 .. $o{clients}) {
    my $pid = fork // die "fork: $!\n";
    if ($pid) {
        push @kids, $pid;
        next;
    }

    close $r;
    while (time < $end) {
        my ($ms, $outcome, $ra) = attempt();
        syswrite $w, "$ms $outcome $ra\n";

        next if $outcome eq '200' || $outcome eq 'timeout';
        my $pause = $ra ne '' ? $ra : 0.1;
        my $rest = $end - time;
        sleep($pause < $rest ? $pause : $rest) if $rest > 0;
    }
    exit 0;
}

close $w;

my (@all, @ok, %code);
my ($attempts, $timeouts, $errors, $retry, $within, $ok_within) = (0) x 6;

while (my $line = <$r>) {
    my ($ms, $outcome, $ra) = split ' ', $line;
    $attempts++;
    if ($outcome eq 'timeout') { $timeouts++; next }
    if ($outcome eq 'error')   { $errors++;   next }

    $code{$outcome}++;
    $retry++ if length($ra // '');
    push @all, $ms;
    push @ok, $ms if $outcome eq '200';
    if ($ms <= $o{within} * 1000) {
        $within++;
        $ok_within++ if $outcome eq '200';
    }
}
waitpid $_, 0 for @kids;

my $secs = time - $start;


# ---------------------------------------------------------------- report

# pct P LIST (sorted): nearest-rank percentile, "-" when empty
sub pct {
    my ($p, @v) = @_;
    return '-' unless @v;
    return sprintf "%.3f", $v[ceil($p / 100 * @v) - 1];
}

@all = sort { $a <=> $b } @all;
@ok = sort { $a <=> $b } @ok;

my $ok = $code{200} // 0;
my $s503 = $code{503} // 0;
my @other = grep { $_ ne '200' && $_ ne '503' } sort keys %code;
my $other = 0;
$other += $code{$_} for @other;
my $share = sub { $attempts ? sprintf("%.3f", $_[0] / $attempts) : '0.000' };

printf "%s: %d clients for %g s, %s; %.1f s until the last attempt ended\n",
    $o{label}, $o{clients}, $o{duration},
    $o{timeout} > 0 ? "client timeout $o{timeout} s"
                    : "no client timeout (attempts cut at $o{'max-wait'} s)",
    $secs;
printf "attempts:    %d: %d answered (200: %d, 503: %d, other: %d%s), "
       . "%d client timeouts, %d errors\n",
    $attempts, scalar @all, $ok, $s503, $other,
    @other ? " [" . join(', ', map { "$_: $code{$_}" } @other) . "]" : '',
    $timeouts, $errors;
printf "logins:      %.2f/s answered 200; %d answers carried Retry-After\n",
    $ok / $secs, $retry;
printf "latency:     answered p50 %s  p90 %s  p99 %s  max %s ms;"
       . " 200s p50 %s  p99 %s ms\n",
    pct(50, @all), pct(90, @all), pct(99, @all), pct(100, @all),
    pct(50, @ok), pct(99, @ok);
printf "within %g s: %.1f%% of the attempts answered, %.1f%% answered 200\n",
    $o{within}, 100 * $share->($within), 100 * $share->($ok_within);

printf "RESULT label=%s clients=%d seconds=%.1f attempts=%d answered=%d"
       . " ok=%d s503=%d other=%d other_codes=%s timeouts=%d errors=%d"
       . " retry_after=%d ok_per_s=%.2f within_share=%s ok_within_share=%s"
       . " p50_ms=%s p90_ms=%s p99_ms=%s max_ms=%s ok_p50_ms=%s"
       . " ok_p99_ms=%s\n",
    $o{label}, $o{clients}, $secs, $attempts, scalar @all, $ok, $s503,
    $other, (join(',', map { "$_:$code{$_}" } @other) || '-'), $timeouts,
    $errors, $retry, $ok / $secs, $share->($within), $share->($ok_within),
    pct(50, @all), pct(90, @all), pct(99, @all), pct(100, @all),
    pct(50, @ok), pct(99, @ok);
