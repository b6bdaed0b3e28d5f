package Test::Nginx::Chat::Blocks;

# The block harness of the data-driven test files: they
#
#     use Test::Nginx::Chat::Blocks 'no_plan';
#
# and get the functions of Test::Nginx::Chat::Socket, our harness, or with
# CHAT_TEST_NGINX=upstream those of openresty's Test::Nginx::Socket (its
# lib directory in @INC). The files keep to what both harnesses accept;
# the one thing upstream lacks, $TEST_NGINX_* in every section, is added
# to it here through its own add_block_preprocessor(). See t/README.

use strict;
use warnings;

use Test::Nginx::Chat::Process qw(expand_block);

our $Harness;    # the package the functions come from
our $Block;      # the block upstream runs now

sub upstream { ($ENV{CHAT_TEST_NGINX} // '') eq 'upstream' }

sub import {
    my $class = shift;

    $Harness = upstream() ? 'Test::Nginx::Socket'
                          : 'Test::Nginx::Chat::Socket';
    (my $file = "$Harness.pm") =~ s{::}{/}g;
    eval { require $file; 1 } or die upstream()
        ? "CHAT_TEST_NGINX=upstream: no $Harness in \@INC "
          . "(prove -I <test-nginx>/lib -I t/lib ...)\n$@"
        : $@;

    if (upstream()) {
        Test::Nginx::Socket::add_block_preprocessor(\&_upstream_block);
    }

    # the harness's import (Test::Base's) exports to its caller: the file
    unshift @_, $Harness;
    goto &{ $Harness->can('import') };
}

# A setting of the harness that runs the blocks: ServRoot, LogLevel,
# ServerPortForClient (upstream keeps them in Test::Nginx::Util); undef
# when no harness is loaded.
sub setting {
    my ($name) = @_;
    my $pkg = upstream() ? 'Test::Nginx::Util' : 'Test::Nginx::Chat::Socket';
    no strict 'refs';
    return ${"${pkg}::$name"};
}

# Upstream expands $TEST_NGINX_* in the server's sections, the pipelined
# requests, response_body and grep_error_log_out only. The other sections
# are expanded after the block's "--- init" ran, as our harness does:
# init code may set the variables the requests use. Preprocessors run
# just before their block, so $Block is the block the code appended to
# its init sees.
sub _upstream_block {
    my ($block) = @_;

    $Block = $block;
    $block->set_value(init => ($block->init // '')
        . "\n;Test::Nginx::Chat::Blocks::_expand_after_init();\n");
}

sub _expand_after_init {
    expand_block($Block, 'rest');
}

1;
