# The gateway's view of its services and the datastore circuit breakers,
# on the stack "./build.sh test" starts from conf/nginx.conf (5 failures
# in a row open a circuit for 5 s; Redis times out after 3 s):
#
#   - /health/services is 503 naming MariaDB while it is stopped, 200
#     again once it is back;
#   - with Redis frozen, once its circuit opens, requests that need Redis
#     get their 503 (with Retry-After) at once instead of after the
#     timeout, /health keeps answering, /health/circuits and /metrics show
#     the open circuit;
#   - after SIGCONT a probe closes it and the requests are served again.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat qw(:all);
use ChatStack;
use Time::HiRes qw(time sleep);

my $port = $ENV{TEST_NGINX_STACK_PORT};
my $work = $ENV{TEST_NGINX_WORK};

plan skip_all => 'needs the stack of "./build.sh test"'
    unless $port && $work && -f "$work/nginx-test/logs/nginx.pid"
           && can_restart_servers();

my $base = "http://127.0.0.1:$port";

$ChatStack::Base = $base;

sub get {
    my ($path, $token) = @_;
    my $res = http_request(GET => "$base$path",
                           $token ? { Authorization => "Bearer $token" }
                                  : {},
                           undef, 15);
    $res->{status} //= 0;
    $res->{json} = json_decode($res->{body} // '');
    return $res;
}

sub circuit {
    my ($datastore) = @_;
    my $c = get('/health/circuits')->{json};
    return ref $c eq 'HASH' ? $c->{$datastore} // {} : {};
}

sub wait_for {
    my ($seconds, $cond) = @_;
    my $until = time() + $seconds;

    while (time() < $until) {
        return 1 if $cond->();
        sleep 0.2;
    }

    return $cond->() ? 1 : 0;
}

sub metric {
    my ($name, %labels) = @_;
    return metric_sum(read_metrics("$base/metrics"), $name, %labels) // -1;
}

my @services = qw(user friend chat notification);


# ---- everything up: every service healthy

ok(wait_for(30, sub { get('/health/services')->{status} == 200 }),
   'at the start every service is healthy');

for my $ds (qw(mysql redis mongodb)) {
    is(circuit($ds)->{state}, 'closed', "the $ds circuit is closed");
}

my $user = register_user();
my $token = login_user($user);

is(get('/api/profile/me', $token)->{status}, 200, 'profile/me is served');


# ---- MariaDB stopped: /health/services names it

stop_server('mariadb');

{
    my $res = get('/health/services');

    is($res->{status}, 503, 'MariaDB stopped: /health/services is a 503');
    cmp_ok($res->{elapsed}, '<', 1, "... at once ($res->{elapsed} s)");
    is($res->{json}{gateway}, 'healthy', '... the gateway itself is healthy');

    for my $svc (@services) {
        is_deeply([ @{ $res->{json}{services}{$svc} // {} }{qw(status error)} ],
                  [ 'unhealthy', 'mysql unavailable' ],
                  "... $svc: unhealthy, mysql unavailable");
    }

    # the health checks are operations like any other: they count
    get('/health/services') for 1 .. 5;

    is(circuit('mysql')->{state}, 'open',
       '... failures in a row open the MariaDB circuit');
    is(circuit('redis')->{state}, 'closed', '... not the others');
}

start_server('mariadb');

ok(wait_for(40, sub { get('/health/services')->{status} == 200 }),
   'MariaDB back: /health/services is 200 again');
is(circuit('mysql')->{state}, 'closed', '... and its circuit is closed');
is(get('/api/profile/me', $token)->{status}, 200, '... requests are served');


# ---- Redis frozen: its circuit opens and answers for it at once

my $opened = metric('chat_circuit_transitions_total', datastore => 'redis',
                    to => 'open');
my $probes = metric('chat_circuit_transitions_total', datastore => 'redis',
                    to => 'half_open');

freeze('redis');

{
    # more requests than chat_circuit_failures, all meeting the timeout
    my @jobs = map {
        fork_job(sub {
            my $res = get('/api/profile/me', $token);
            return { status => $res->{status}, elapsed => $res->{elapsed} };
        })
    } 1 .. 8;

    # nothing waits on the event loop meanwhile
    my ($n, $bad, $slowest) = (0, 0, 0);
    my $until = time() + 2;

    while (time() < $until) {
        my $res = get('/health');
        $n++;
        $bad++ if $res->{status} != 200;
        $slowest = $res->{elapsed} if $res->{elapsed} > $slowest;
        sleep 0.05;
    }

    ok($n >= 10 && $bad == 0, "Redis frozen: /health answered $n times, "
       . "$bad bad");
    cmp_ok($slowest, '<', 0.25, "... the slowest in $slowest s");

    my @res = map { job_result($_) // {} } @jobs;

    is(scalar(grep { ($_->{status} // 0) == 503 } @res), scalar @jobs,
       'the requests that met the timeout: 503');
    cmp_ok((sort { $b <=> $a } map { $_->{elapsed} // 99 } @res)[0], '<', 5,
           '... within the Redis timeout');
}

{
    my @took;
    my ($bad, $retry) = (0, 0);

    for (1 .. 10) {
        my $res = get('/api/profile/me', $token);
        push @took, $res->{elapsed};
        $bad++ unless $res->{status} == 503
                      && ($res->{json}{error} // '') eq 'database_error';
        my $ra = $res->{headers}{'retry-after'} // '';
        $retry++ if $ra =~ /^\d+$/ && $ra >= 1 && $ra <= 5;
    }

    my $slowest = (sort { $b <=> $a } @took)[0];

    is($bad, 0, 'circuit open: 10 requests needing Redis, each a JSON 503');
    cmp_ok($slowest, '<', 0.05, "... in under 50 ms each (slowest "
           . sprintf('%.1f', $slowest * 1000) . ' ms, all: '
           . join(' ', map { sprintf('%.1f', $_ * 1000) } @took) . ')');
    is($retry, 10, '... with Retry-After, at most the cool-down');

    my $res = get('/health/services');
    is($res->{status}, 503, '/health/services: 503');
    cmp_ok($res->{elapsed}, '<', 0.05, "... at once ($res->{elapsed} s)");
    is($res->{json}{services}{friend}{error}, 'redis unavailable',
       '... naming Redis');

    my $c = circuit('redis');
    is($c->{state}, 'open', '/health/circuits: redis open');
    cmp_ok($c->{failure_count} // 0, '>=', 5, "... after $c->{failure_count} "
           . 'failures in a row');
    ok(($c->{retry_after} // 0) > 0 && $c->{retry_after} <= 5,
       "... retry_after $c->{retry_after} s");
    is(circuit('mysql')->{state}, 'closed', '... MariaDB\'s closed');

    is(metric('chat_circuit_state', datastore => 'redis'), 1,
       '/metrics: chat_circuit_state{datastore="redis"} 1');
    is(metric('chat_circuit_transitions_total', datastore => 'redis',
              to => 'open'), $opened + 1, '... one transition to open');
    cmp_ok(metric('chat_circuit_rejected_total', datastore => 'redis'), '>=',
           10, '... the refusals counted');

    is(get('/health')->{status}, 200, '/health answers');
}

thaw('redis');

# the requests themselves probe, one per cool-down
{
    my $t0 = time();
    my $st;

    ok(wait_for(30, sub { ($st = get('/api/profile/me', $token)->{status})
                          == 200 }),
       'Redis thawed: requests are served again');
    note(sprintf('served again after %.1f s', time() - $t0));

    is(circuit('redis')->{state}, 'closed', '... the circuit is closed');
    is(metric('chat_circuit_state', datastore => 'redis'), 0,
       '/metrics: chat_circuit_state{datastore="redis"} 0');
    cmp_ok(metric('chat_circuit_transitions_total', datastore => 'redis',
                  to => 'half_open'), '>', $probes, '... after a probe');
    cmp_ok(metric('chat_circuit_transitions_total', datastore => 'redis',
                  to => 'closed'), '>=', 1, '... that closed it');

    ok(wait_for(10, sub { get('/health/services')->{status} == 200 }),
       '/health/services is 200 again');
}

done_testing();
