# Concurrency in the user service: 20 registrations of one e-mail at the
# same moment give exactly one user and 19 conflicts; the same for one
# username; bad input thrown in parallel never gives a 5xx.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use POSIX ();

# every registration must reach the database here, so the CPU queue takes
# them all (admission control under overload is t/600's subject)
my $ngx = start_nginx_with(
    workers     => 2,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config() . <<'EOF',
    chat_cpu_queue_size     64;
    chat_cpu_queue_timeout  60s;
EOF
    config      => 'location /api/ { chat_user; }',
);

# n requests at once, one process each; returns their statuses and bodies
sub parallel {
    my (@requests) = @_;
    my @jobs;

    for my $req (@requests) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork() // die "fork: $!";

        if ($pid == 0) {
            close $r;
            my $res = http_request($req->[0], $ngx->url($req->[1]),
                                   { 'Content-Type' => 'application/json' },
                                   $req->[2], 30);
            print {$w} json_encode({ status => $res->{status} // 0,
                                     body => $res->{body} // '' });
            close $w;
            POSIX::_exit(0);
        }

        close $w;
        push @jobs, [$pid, $r];
    }

    my @out;

    for my $job (@jobs) {
        my $fh = $job->[1];
        local $/;
        push @out, json_decode(<$fh>) // { status => 0, body => '' };
        waitpid($job->[0], 0);
    }

    return @out;
}

sub count {
    my ($status, @results) = @_;
    return scalar grep { $_->{status} == $status } @results;
}

{
    my $name = unique_name('race');
    my @res = parallel(map {
        [POST => '/api/auth/register',
         json_encode({ email => "$name\@example.com",
                       username => "${name}n$_", password => 'Secret#123' })]
    } 1 .. 20);

    is(count(201, @res), 1, 'one e-mail, 20 at once: one created');
    is(count(409, @res), 19, '... and 19 conflicts')
        or diag(join "\n", map { "$_->{status} $_->{body}" } @res);
    like($_->{body}, qr/"(resource_conflict|duplicate_entry)"/,
         'a conflict body') for grep { $_->{status} == 409 } @res;
    is(mysql_cmd("SELECT COUNT(*) FROM users WHERE email = "
                 . "'$name\@example.com'"), 1, 'one row');
}

{
    my $name = unique_name('rn');
    my @res = parallel(map {
        [POST => '/api/auth/register',
         json_encode({ email => "$name$_\@example.com",
                       username => $name, password => 'Secret#123' })]
    } 1 .. 20);

    is(count(201, @res), 1, 'one username, 20 at once: one created');
    is(count(409, @res), 19, '... and 19 conflicts');
    is(mysql_cmd("SELECT COUNT(*) FROM users WHERE username = '$name'"), 1,
       'one row');
}

{
    my @bad = (
        '{"email":', '[]', '"x"', '{"email":null}', "\xff\xfe\xfd",
        '{"email":"a@b.c","username":"' . ("u" x 10000) . '"}',
        '{"email":{"$gt":""},"username":1,"password":[]}',
    );
    my @res = parallel(map { [POST => '/api/auth/register', $_] } @bad,
                       map { [POST => '/api/auth/login/json', $_] } @bad);

    is(scalar(grep { $_->{status} >= 400 && $_->{status} < 500 } @res),
       scalar(@res), 'bad input in parallel: all JSON 4xx')
        or diag(join "\n", map { "$_->{status} $_->{body}" } @res);
    is(scalar(grep { $_->{body} =~ /^\{"detail":/ } @res), scalar(@res),
       '... with a detail body');

    my $res = http_request(GET => $ngx->url('/api/users/search?query=a'));
    is($res->{status}, 401, 'the service keeps answering');
}

stop_nginx($ngx);

done_testing();
